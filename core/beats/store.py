"""Beat analyses, the user's grid edits and hot cues, one small JSON sidecar per track.

A track's sidecar is ``<cache>/beats/<audio hash>.json``, the hash taken of the
decoded audio at its own rate (:func:`audio_hash`), so a renamed or moved file
keeps its grid, and a stem file's grid is filed under its mix. The hash leaves
out the separation cache's format version and every separation parameter: a new
cache format or preset does not lose a user's grid edits. A sidecar holds two
parts, kept apart so that a new analysis never overwrites an edit::

    {"format": 1,
     "analysis": {"bpm": 120.0, "downbeat": 0.01, "beats_per_bar": 4,
                  "duration": 180.0, "key": null, "version": 1},
     "edit": {"bpm": 60.0, "downbeat": 0.01, "beats_per_bar": 4} | null,
     "cues": {"1": {"position": 12.3, "scene": "acapella" | null}, ...}}

``cues`` (hot cues 1 to :data:`MAX_CUES`, positions in seconds of the track) is
written only when a cue is set; a sidecar without it has none.

Every write goes to a temporary file renamed into place, so a reader never sees
half a sidecar. A sidecar that cannot be read as one (not JSON, too large, wrong
fields, a value out of range) raises :class:`~stemdeck.core.errors.BeatStoreError`
naming the file and the fault; :meth:`BeatStore.load_or_analyze` logs it once and
analyses the track again (an edit in a damaged file is lost with it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..audiofile.files import create_temp, disk_full_message
from ..audiofile.samples import validate_audio
from ..errors import BeatStoreError, ParameterError
from .analysis import BeatAnalysis
from .grid import BeatGrid

__all__ = [
    "ANALYSIS_VERSION",
    "MAX_CUES",
    "MAX_CUE_SCENE",
    "NO_CUES",
    "SIDECAR_FORMAT",
    "BeatRecord",
    "BeatStore",
    "HotCue",
    "audio_hash",
    "track_record",
]

log = logging.getLogger(__name__)

#: The sidecar layout's version; a sidecar of another is read as damaged.
SIDECAR_FORMAT = 1
#: The analysis's version: a stored analysis of another is computed again (the
#: edit is kept).
ANALYSIS_VERSION = 1
#: A sidecar is a few hundred bytes; anything past this is not one.
MAX_SIDECAR_BYTES = 64 * 1024
_HASH_CHARS = 40
#: Hot cues a track has (numbered 1 to MAX_CUES).
MAX_CUES = 8
#: The longest scene name a cue keeps.
MAX_CUE_SCENE = 64


def audio_hash(y: np.ndarray, sr: int) -> str:
    """Hex hash (40 characters) of decoded audio and its rate: the sidecar's name.

    The same construction as the separation cache's key
    (:func:`~stemdeck.core.separation.cache.cache_key`: BLAKE2b-160 over the
    rate, shape and dtype, then the samples) without its parameters and format
    version, which are the separation's and not the audio's.

    Raises
    ------
    AudioFileError
        Empty audio or NaN/inf samples.
    """
    y = validate_audio(y, name="track")
    h = hashlib.blake2b(digest_size=_HASH_CHARS // 2)
    described = {"sr": int(sr), "shape": list(y.shape), "dtype": str(y.dtype)}
    h.update(json.dumps(described, sort_keys=True).encode())
    h.update(np.ascontiguousarray(y).data)
    return h.hexdigest()


@dataclass(frozen=True)
class HotCue:
    """A hot cue: a position (seconds of the track) and the scene a jump to it
    recalls (None: none)."""

    position: float
    scene: str | None = None


NO_CUES: tuple[HotCue | None, ...] = (None,) * MAX_CUES


@dataclass(frozen=True)
class BeatRecord:
    """What the store holds for one track.

    Attributes
    ----------
    analysis : BeatAnalysis or None
        The analysis as computed (``None``: not yet, or of an older version).
    edit : BeatGrid or None
        The user's grid, replacing the analysis's; ``None``: no edit.
    cues : tuple of HotCue or None, length MAX_CUES
        Hot cue ``n`` is ``cues[n - 1]`` (None: not set).
    """

    analysis: BeatAnalysis | None
    edit: BeatGrid | None = None
    cues: tuple[HotCue | None, ...] = NO_CUES

    @property
    def grid(self) -> BeatGrid | None:
        """The grid in force: the edit when there is one, else the analysis's."""
        if self.edit is not None:
            return self.edit
        return None if self.analysis is None else self.analysis.grid

    def effective(self) -> BeatAnalysis | None:
        """The analysis with the edit's grid in force (what a user is shown)."""
        if self.analysis is None:
            return None
        if self.edit is None:
            return self.analysis
        return BeatAnalysis(self.edit, self.analysis.duration, self.analysis.key)


def _number(obj: dict[str, Any], name: str, where: str) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BeatStoreError(f"{where}: {name!r} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise BeatStoreError(f"{where}: {name!r} must be finite, got {value!r}")
    return float(value)


def _grid_from(obj: object, where: str) -> BeatGrid:
    if not isinstance(obj, dict):
        raise BeatStoreError(f"{where}: expected an object, got {type(obj).__name__}")
    bpm = _number(obj, "bpm", where)
    downbeat = _number(obj, "downbeat", where)
    bpb = obj.get("beats_per_bar")
    if isinstance(bpb, bool) or not isinstance(bpb, int):
        raise BeatStoreError(f"{where}: 'beats_per_bar' must be a whole number, got {bpb!r}")
    try:
        return BeatGrid(bpm, downbeat, bpb)
    except ParameterError as exc:
        raise BeatStoreError(f"{where}: {exc}") from None


def _parse(text: bytes, path: Path) -> BeatRecord:
    where = f"beat sidecar {str(path)!r}"
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BeatStoreError(
            f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    try:
        data = json.loads(decoded)
    except (ValueError, RecursionError) as exc:
        raise BeatStoreError(f"{where}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BeatStoreError(f"{where}: expected an object, got {type(data).__name__}")
    if data.get("format") != SIDECAR_FORMAT:
        raise BeatStoreError(
            f"{where}: format {data.get('format')!r}, this stemdeck reads {SIDECAR_FORMAT}"
        )
    analysis = None
    raw = data.get("analysis")
    if raw is not None:
        grid = _grid_from(raw, f"{where} analysis")
        assert isinstance(raw, dict)
        duration = _number(raw, "duration", f"{where} analysis")
        if duration <= 0:
            raise BeatStoreError(f"{where} analysis: 'duration' must be positive, got {duration}")
        key = raw.get("key")
        if key is not None and not (isinstance(key, str) and len(key) <= 16):
            raise BeatStoreError(f"{where} analysis: 'key' must be a short text or null")
        if raw.get("version") == ANALYSIS_VERSION:
            analysis = BeatAnalysis(grid, duration, key)
    edit = None if data.get("edit") is None else _grid_from(data["edit"], f"{where} edit")
    return BeatRecord(analysis, edit, _cues_from(data.get("cues"), f"{where} cues"))


def _cues_from(obj: object, where: str) -> tuple[HotCue | None, ...]:
    if obj is None:
        return NO_CUES
    if not isinstance(obj, dict):
        raise BeatStoreError(f"{where}: expected an object, got {type(obj).__name__}")
    cues: list[HotCue | None] = list(NO_CUES)
    for name, raw in obj.items():
        if name not in {str(n) for n in range(1, MAX_CUES + 1)}:
            raise BeatStoreError(f"{where}: cue {name!r} is not 1 to {MAX_CUES}")
        if not isinstance(raw, dict):
            raise BeatStoreError(f"{where} {name}: expected an object, got {type(raw).__name__}")
        position = _number(raw, "position", f"{where} {name}")
        if position < 0:
            raise BeatStoreError(f"{where} {name}: 'position' must be >= 0, got {position}")
        scene = raw.get("scene")
        if scene is not None and not (isinstance(scene, str) and 0 < len(scene) <= MAX_CUE_SCENE):
            raise BeatStoreError(f"{where} {name}: 'scene' must be a scene name or null")
        cues[int(name) - 1] = HotCue(position, scene)
    return tuple(cues)


def _serialize(record: BeatRecord) -> bytes:
    analysis = None
    if record.analysis is not None:
        analysis = {
            **record.analysis.grid.as_dict(),
            "duration": record.analysis.duration,
            "key": record.analysis.key,
            "version": ANALYSIS_VERSION,
        }
    edit = None if record.edit is None else record.edit.as_dict()
    data: dict[str, Any] = {"format": SIDECAR_FORMAT, "analysis": analysis, "edit": edit}
    cues = {
        str(n): {"position": cue.position, "scene": cue.scene}
        for n, cue in enumerate(record.cues, 1)
        if cue is not None
    }
    if cues:
        data["cues"] = cues
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


class BeatStore:
    """The beat sidecars under a cache folder.

    Parameters
    ----------
    root : path-like
        The cache folder (``SeparationCache().root`` or
        :func:`~stemdeck.core.separation.cache.default_cache_dir`); the
        sidecars go to its ``beats`` folder, made on the first write.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.folder = Path(root) / "beats"

    def path(self, key: str) -> Path:
        """The sidecar of the track whose :func:`audio_hash` is ``key``.

        Raises
        ------
        ParameterError
            ``key`` is not 40 lower-case hex digits (it names a file).
        """
        if not (
            isinstance(key, str)
            and len(key) == _HASH_CHARS
            and all(c in "0123456789abcdef" for c in key)
        ):
            raise ParameterError(f"a beat store key is 40 hex digits, got {key!r}")
        return self.folder / f"{key}.json"

    def load(self, key: str) -> BeatRecord | None:
        """The stored record, or ``None`` when there is none.

        Raises
        ------
        BeatStoreError
            The sidecar exists but is damaged or cannot be read (the message says
            which and why).
        """
        path = self.path(key)
        try:
            with path.open("rb") as f:
                text = f.read(MAX_SIDECAR_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BeatStoreError(
                f"cannot read beat sidecar {str(path)!r}: {exc.strerror or exc}"
            ) from None
        if len(text) > MAX_SIDECAR_BYTES:
            raise BeatStoreError(
                f"beat sidecar {str(path)!r}: larger than {MAX_SIDECAR_BYTES} bytes"
            )
        return _parse(text, path)

    def save(self, key: str, record: BeatRecord) -> None:
        """Write ``record`` as the track's sidecar, atomically.

        Raises
        ------
        BeatStoreError
            The folder cannot be written (the disk is full, permissions).
        """
        path = self.path(key)
        tmp: Path | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = create_temp(self.folder, label="beats", suffix=".json")
            with tmp.open("wb") as f:
                f.write(_serialize(record))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise BeatStoreError(disk_full_message(path)) from None
            raise BeatStoreError(
                f"cannot write beat sidecar {str(path)!r}: {exc.strerror or exc}"
            ) from None
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def load_or_analyze(
        self, key: str, analyze: Callable[[], BeatAnalysis]
    ) -> tuple[BeatRecord, bool]:
        """The stored record with an analysis, computing and storing one when the
        sidecar has none, holds an older analysis version, or is damaged (logged
        as one warning); returns (record, computed now).

        A user's edit and hot cues in a readable sidecar are kept. A store that cannot be
        written is logged as a warning: the analysis is still returned.
        """
        try:
            record = self.load(key)
        except BeatStoreError as exc:
            log.warning("%s; analysing the track again", exc)
            record = None
        if record is not None and record.analysis is not None:
            return record, False
        record = BeatRecord(analyze()) if record is None else replace(record, analysis=analyze())
        try:
            self.save(key, record)
        except BeatStoreError as exc:
            log.warning("%s; the analysis is not kept", exc)
        return record, True

    def edit(self, key: str, change: Callable[[BeatGrid], BeatGrid]) -> BeatRecord:
        """Apply ``change`` to the track's grid in force and store the result as
        its edit (the analysis stays as it was).

        Raises
        ------
        BeatStoreError
            No analysis stored for ``key``, a damaged sidecar, or a failed write.
        ParameterError
            ``change`` gives an invalid grid (a tempo out of range).
        """
        record = self.load(key)
        if record is None or record.grid is None:
            raise BeatStoreError(f"no beat grid stored for track {key}; analyse it first")
        updated = replace(record, edit=change(record.grid))
        self.save(key, updated)
        return updated

    def clear_edit(self, key: str) -> BeatRecord | None:
        """Drop the track's edit: the analysis's grid is in force again."""
        record = self.load(key)
        if record is None or record.edit is None:
            return record
        updated = replace(record, edit=None)
        self.save(key, updated)
        return updated


def track_record(
    y: np.ndarray, sr: int, store: BeatStore | None, analyze: Callable[[], BeatAnalysis]
) -> tuple[str, BeatRecord, bool]:
    """A track's record: its :func:`audio_hash`, the stored record (with the user's
    edit) or ``analyze()`` stored now (:meth:`BeatStore.load_or_analyze`), and
    whether it was computed now. With no ``store`` (no cache), computed and kept
    nowhere.

    Raises
    ------
    AudioFileError
        Empty audio or NaN/inf samples (the hash).
    Exception
        Whatever ``analyze`` raises.
    """
    key = audio_hash(y, sr)
    if store is None:
        return key, BeatRecord(analyze()), True
    record, computed = store.load_or_analyze(key, analyze)
    return key, record, computed
