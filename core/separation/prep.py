"""One track of a library prep, as a pure function: the track's bytes in, its separation out.

``stemdeck prep`` (``daemon/prep/``) runs :func:`prepare_track` as a Dask task on
worker processes that may sit on other machines. It takes nothing but the
file's bytes and the separation parameters, so Dask may run it anywhere, and
again after a worker died: the same bytes give the same separation.

Where the result goes depends on what the worker sees:

- the client's cache folder (:func:`sees_cache`: the worker finds the client's
  token file in it, so it is the same folder, on this machine or a shared
  disk): the worker writes the cache entry itself and returns only its key. An
  entry is written in a temporary folder and renamed into place, and a key
  already there is kept, so a retried task never leaves half an entry nor
  writes one twice;
- otherwise the separation comes back to the client, which stores it
  (:func:`stemdeck.core.separation.separate.store_separation`).

The track's beat grid is found or computed with it (``core/beats``): kept in the
shared cache folder's beat store by the worker, else returned for the client to
keep.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audiofile.files import load
from ..beats.analysis import analyze_beats
from ..beats.store import BeatRecord, BeatStore, track_record
from ..errors import AudioFileError, StemdeckError
from .cache import SeparationCache
from .keys import SeparationSpec
from .separate import Separation, separate

__all__ = [
    "TOKEN_PREFIX",
    "TrackResult",
    "decode_bytes",
    "prepare_track",
    "sees_cache",
    "track_beats",
]

#: Name prefix of the file a prep client leaves in its cache folder while it runs.
TOKEN_PREFIX = ".prep-"


@dataclass
class TrackResult:
    """What one task gives back.

    Attributes
    ----------
    key : str
        The cache key of the separation (empty when the track failed).
    duration : float
        Seconds of audio.
    seconds : float
        Wall time the task took.
    separation : Separation or None
        The separation itself when the worker did not write it into the
        client's cache (``entry`` is then None).
    entry : str or None
        The cache entry the worker wrote (or found) in the shared cache folder.
    error : str or None
        Why the track failed: one line.
    cached : bool
        The entry was in the shared cache already: nothing was separated.
    beat_key : str
        The track's audio hash, its beat sidecar's name (empty without a grid).
    beats : BeatRecord or None
        Its beat analysis (and the user's edit, from a shared cache folder); None
        when the analysis failed (``beats_error`` says why).
    beats_error : str or None
        Why the track has no beat grid: one line.
    """

    key: str
    duration: float
    seconds: float
    separation: Separation | None = None
    entry: str | None = None
    error: str | None = None
    cached: bool = False
    beat_key: str = ""
    beats: BeatRecord | None = None
    beats_error: str | None = None


def sees_cache(root: str | os.PathLike[str], token: str) -> bool:
    """Whether ``root`` is the client's cache folder: its token file is there."""
    try:
        return (Path(root) / f"{TOKEN_PREFIX}{token}").read_text(encoding="utf-8") == token
    except (OSError, UnicodeDecodeError):
        return False


def decode_bytes(data: bytes, *, suffix: str, name: str = "track") -> tuple[np.ndarray, int]:
    """Decode an audio file's bytes at their own rate, as :func:`load` would the file.

    ``suffix`` is the file's extension (``.flac``, ``.m4a``): MP4s are told apart
    by it. The bytes go through a private temporary file, removed at once;
    error messages call the track ``name``.

    Raises
    ------
    AudioFileError
        The bytes are not audio libsndfile or PyAV read, or hold NaN/inf samples.
    """
    safe = "".join(c for c in suffix if c.isalnum() or c == ".")[:16] or ".audio"
    with tempfile.TemporaryDirectory(prefix="stemdeck-prep-") as folder:
        path = Path(folder) / f"track{safe}"
        path.write_bytes(data)
        try:
            return load(path)
        except AudioFileError as exc:
            message = str(exc).replace(repr(str(path)), repr(name)).replace(str(path), name)
            raise AudioFileError(message) from None


def track_beats(
    y: np.ndarray, sr: int, root: str | None
) -> tuple[str, BeatRecord | None, str | None]:
    """(audio hash, beat record, why there is none) of a decoded track; the record
    read from or stored in the beat store under ``root`` when given."""
    try:
        store = BeatStore(root) if root is not None else None
        key, record, _ = track_record(y, sr, store, lambda: analyze_beats(y, sr))
    except StemdeckError as exc:
        return "", None, str(exc)
    return key, record, None


def prepare_track(
    data: bytes,
    *,
    suffix: str,
    name: str = "track",
    spec: SeparationSpec,
    cache_root: str | None = None,
    cache_token: str | None = None,
    cache_max_bytes: int | None = None,
    nmf_threads: int | None = None,
) -> TrackResult:
    """Separate one track given as its file's bytes.

    Parameters
    ----------
    data : bytes
        The audio file, whole.
    suffix : str
        Its extension, to tell MP4s from the rest.
    name : str
        What to call the track in an error message.
    spec : SeparationSpec
        The separation.
    cache_root, cache_token : str, optional
        The client's cache folder and the token it left there: when this
        process finds the token (:func:`sees_cache`), the entry is written there
        and not returned.
    cache_max_bytes : int, optional
        The client's cache size limit, for the eviction after a store.
    nmf_threads : int, optional
        Threads of the NMF (:func:`~stemdeck.core.separation.separate.separate`).

    Returns
    -------
    TrackResult
        A track that cannot be decoded or separated gives ``error`` (one line);
        nothing is raised for it, so Dask does not retry a broken file.
    """
    t0 = time.perf_counter()
    try:
        y, sr = decode_bytes(data, suffix=suffix, name=name)
        key = spec.key(y, sr)  # the one hash: separate() files the entry under it
        duration = y.shape[1] / sr
        shared = (
            cache_root is not None
            and cache_token is not None
            and sees_cache(cache_root, cache_token)
        )
        beats = track_beats(y, sr, cache_root if shared else None)
        if shared:
            assert cache_root is not None
            cache = SeparationCache(cache_root, max_bytes=cache_max_bytes)
            result = separate(y, sr, spec=spec, cache=cache, key=key, nmf_threads=nmf_threads)
            if result.info.get("cache_path"):
                return TrackResult(
                    key,
                    duration,
                    time.perf_counter() - t0,
                    entry=str(result.info["cache_path"]),
                    cached=result.from_cache,
                    beat_key=beats[0],
                    beats=beats[1],
                    beats_error=beats[2],
                )
            # The shared folder could not be written (full disk): the client tries.
            result.channels = np.asarray(result.channels)
        else:
            result = separate(y, sr, spec=spec, nmf_threads=nmf_threads)
        return TrackResult(
            key,
            duration,
            time.perf_counter() - t0,
            separation=result,
            beat_key=beats[0],
            beats=beats[1],
            beats_error=beats[2],
        )
    except StemdeckError as exc:
        return TrackResult("", 0.0, time.perf_counter() - t0, error=str(exc))
