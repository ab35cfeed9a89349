"""Track loading: the original at once, separated channels when they are ready.

One :class:`TrackLoader` owns everything a track change involves: reading the
file, the separation worker process and its pipe, the cache and its
background verification, and publishing channels to the engine. Requests are
numbered (:attr:`TrackLoader.generation`); one lock guards the number and the
worker, and nothing from an older request is ever posted once a newer one has
been made, so the last request wins and an earlier request's worker is ended.

Sequence of one load (a background thread per request)::

    request(path)          validate: library, regular file, audio header -> ack
      read + decode        the source at its own rate, once: everything below uses
                           this audio
      post SetTrack(mix)   the original, resampled to the engine's rate, plays from
                           its start (old track fades out)
      key                  one hash of the decoded audio (SeparationSpec.key)
      cache hit?           verify every block in the background, resample the
                           channels to the engine's rate when the rates differ, then
                           post SetTrack(channels, same_audio=True)
      else                 the decoded audio goes to a worker process in shared
                           memory (separation_worker.py) with the key; it separates
                           at the source rate into the cache under that key and
                           reports ("done", key); the watcher opens that entry,
                           verifies it and publishes the channels the same way, and
                           releases the shared memory (as do a superseded request,
                           an ended worker and close())

The file is never read again once decoded: a file rewritten meanwhile changes
neither what plays nor what is separated.

A track separated by ``stemdeck separate`` or ``stemdeck prep`` at 44.1 kHz is
therefore a cache hit on a 48 kHz device too.

Every ``SetTrack`` goes to the engine in one command with the registry's whole state
(a :class:`~stemdeck.core.control.registry.Transaction` committed with the
``SetTrack`` as its extra command), so a track never plays with stale strip targets,
and the registry takes the track's channel names only if the engine took the track.
If the engine's queue is full the post is retried for :data:`POST_RETRY_S`, then the
load is given up and says why (the status line's problem): the old track plays on.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stemdeck.core.audiofile.files import load, probe_audio
from stemdeck.core.audiofile.mp4 import is_mp4_path
from stemdeck.core.audiofile.samples import resample, resample_channels
from stemdeck.core.audiofile.stemfile import (
    StemFile,
    channel_keys,
    probe,
    read_stem_file,
    stem_track_name,
)
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import AudioFileError, ParameterError, StemdeckError
from stemdeck.core.mixer.commands import Command, SetTrack, Track
from stemdeck.core.separation.cache import SeparationCache
from stemdeck.core.separation.keys import SeparationSpec

from .pathnames import resolve_listed
from .separation_worker import ProcessContext, SeparationWorker

__all__ = ["DEMO", "TrackLoader", "read_source"]

log = logging.getLogger(__name__)

DEMO = "demo:"  # the built-in demo track, as a track source
# A track refused by a full engine queue is posted again for this long: the audio
# thread empties the queue every block, so only a stalled stream outlasts it.
POST_RETRY_S = 1.0
POST_RETRY_INTERVAL_S = 0.01


def read_source(source: str, sr: int | None) -> tuple[np.ndarray, int, str]:
    """Audio of a track source (a path or the demo), at ``sr`` when given."""
    if source == DEMO:
        from stemdeck.core.material.demo import demo_track

        demo = demo_track()
        y = demo.mix
        if sr is not None and sr != demo.sr:
            y = resample(y, demo.sr, sr)
        return y, sr or demo.sr, demo.name
    y, file_sr = load(source, sr=sr)
    return y, file_sr, stem_track_name(source)


def read_stem_source(source: str, sr: int) -> StemFile | None:
    """A stem file's stems at ``sr`` (decoded whole, or AudioFileError), else None."""
    if source == DEMO or not is_mp4_path(source) or probe(source) is None:
        return None
    return read_stem_file(source, sr=sr, master=False)


class TrackLoader:
    """Loads tracks into an engine: the original at once, then its channels.

    Parameters
    ----------
    engine : the mixer (``sr`` and ``post`` are used)
    registry : Registry
        Its whole state is posted with each ``SetTrack``, in one command, so the
        channels start at the current levels.
    names : sequence of str
        Channel names a separation gives (the engine has exactly this many strips).
    spec : SeparationSpec
        The separation.
    cache : SeparationCache or None
        Opened with ``verify_on_load=False``: the loader verifies every block
        in the background while the original plays.
    library : list of Path
        Folders ``/track/load`` may read from.
    mp_context : multiprocessing context, optional
        How the separation worker is started (default: spawn; a test forks).
    """

    def __init__(
        self,
        engine: Any,
        registry: Registry,
        names: Sequence[str],
        *,
        spec: SeparationSpec,
        cache: SeparationCache | None,
        library: Sequence[Path],
        mp_context: ProcessContext | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.names = tuple(names)
        self.spec = spec
        self.cache = cache
        self.library = list(library)
        self.mp_context: ProcessContext = mp_context or mp.get_context("spawn")
        self.generation = 0
        self.track_name = ""
        self.progress: tuple[str, float] | None = None
        self.problem: str | None = None  # the last load's failure, for the status line
        self.separated = False  # the current track's channels play (not its original)
        self.colours: list[str] = []  # #RRGGBB per channel, when the track names them
        self._lock = threading.Lock()
        self._worker: SeparationWorker | None = None
        self._closed = False

    @property
    def post(self) -> Callable[[Command], bool]:
        return self.engine.post

    # -- requests ---------------------------------------------------------------------
    def check(self, path: str) -> str:
        """The resolved path of a ``/track/load`` request, or ParameterError saying why not.

        Only regular files under a library folder (after resolving ``..`` and
        symlinks), whose header says they hold audio (:func:`probe_audio`: for an
        MP4, its boxes and a stem file's manifest; the audio is decoded in the
        background). A name as ``/track/list`` escapes it is taken back
        (:func:`~stemdeck.daemon.pathnames.resolve_listed`).
        """
        target = Path(resolve_listed(path)).expanduser()
        try:
            resolved = target.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ParameterError(f"refused {path!r}: no such file") from None
        if not any(resolved.is_relative_to(root) for root in self.library):
            roots = ", ".join(str(r) for r in self.library) or "(none: use --library)"
            raise ParameterError(f"refused {path!r}: outside the library folders {roots}")
        if not resolved.is_file():
            raise ParameterError(f"refused {path!r}: not a regular file")
        try:
            info = probe_audio(resolved)
        except AudioFileError as exc:
            # A stem file's reader says what is damaged; for the rest, that is enough.
            reason = str(exc) if is_mp4_path(resolved) else "not a readable audio file"
            raise ParameterError(f"refused {path!r}: {reason}") from None
        if not info.holds_audio:
            raise ParameterError(f"refused {path!r}: the file holds no audio")
        return str(resolved)

    def request(self, path: str) -> int:
        """Validate (:meth:`check`), then load in the background; returns the request number."""
        resolved = self.check(path)
        return self.start(resolved)

    def start(self, source: str) -> int:
        """Load ``source`` (a checked path or :data:`DEMO`) in the background."""
        with self._lock:
            self.generation += 1
            gen = self.generation
        threading.Thread(
            target=self._load, args=(source, gen), name="stemdeck-load", daemon=True
        ).start()
        return gen

    def open(self, source: str) -> None:
        """Start-up: read ``source`` now (errors raise), play its original, and
        bring its channels in the background."""
        with self._lock:
            self.generation += 1
            gen = self.generation
        stems = read_stem_source(source, self.engine.sr)
        if stems is not None:
            self._publish_stems(stems, source, gen)
            return
        y, sr, name = read_source(source, None)
        if self._begin(y, sr, name, gen):
            threading.Thread(
                target=self._channels,
                args=(y, sr, gen, name),
                name="stemdeck-load",
                daemon=True,
            ).start()

    def current(self, gen: int) -> bool:
        return gen == self.generation and not self._closed

    # -- the work (background threads) -------------------------------------------------
    def _load(self, source: str, gen: int) -> None:
        self._end_worker()  # an earlier request's worker ends now, not when it finishes
        try:
            stems = read_stem_source(source, self.engine.sr)
            if stems is not None:
                self._publish_stems(stems, source, gen)
                return
            y, sr, name = read_source(source, None)
        except StemdeckError as exc:
            if self.current(gen):
                self.problem = str(exc)
                log.warning("track not loaded: %s", exc)
            return
        if self._begin(y, sr, name, gen):
            self._channels(y, sr, gen, name)

    def _begin(self, y: np.ndarray, sr: int, name: str, gen: int) -> bool:
        """Play the original of request ``gen`` (if still current) from its start;
        ``y`` is the source at its own rate ``sr``."""
        if not self.current(gen):
            return False
        mix = y if sr == self.engine.sr else resample(y, sr, self.engine.sr)
        with self._lock:
            if not self.current(gen):
                return False
            self._end_worker_locked()

        def posted() -> None:
            self.track_name = name
            self.problem = None
            self.separated = False
            self.progress = ("starting", 0.0)
            self.colours = []

        track = Track(mix[np.newaxis], self.engine.sr, ("mix",), is_mix=True)
        return self._post_track(
            gen, SetTrack(track), self.names, posted, f"{name} not loaded; load it again"
        )

    def _channels(self, y: np.ndarray, sr: int, gen: int, name: str) -> None:
        """From the cache (verified) or a worker: the channels of request ``gen``.

        ``y`` (the source at its own rate ``sr``, decoded once) is hashed once for
        its key; the worker separates this very audio under this key."""
        key = None
        if self.cache is not None:
            try:
                key = self.spec.key(y, sr)
            except StemdeckError as exc:
                log.warning("cache: %s", exc)
            if key is not None and self._from_cache(key, sr, gen, name):
                return
        self._spawn(y, sr, key, gen, name)

    def _verified(self, key: str, gen: int | None = None) -> np.ndarray | None:
        """The channels of the cache entry ``key``, every block verified; None (the
        reason logged) when absent, damaged or unreadable. With ``gen``, request
        ``gen``'s progress says ``verifying`` while the blocks are checked."""
        assert self.cache is not None
        found = self.cache.load(key)
        if found.entry is not None:
            if gen is not None:
                with self._lock:
                    if self.current(gen):
                        self.progress = ("verifying", 0.0)
            found = self.cache.verify(found.entry)  # every block, while the original plays
        if found.entry is None:
            if found.problem:
                log.warning(found.problem)
            return None
        return found.entry.channels

    def _from_cache(self, key: str, sr: int, gen: int, name: str) -> bool:
        """Publish a verified cache entry; False when there is none (or it was damaged)."""
        channels = self._verified(key, gen)
        if channels is None:
            return False
        if self._publish(channels, sr, gen):
            log.info("%s: %d channels from the cache", name, len(channels))
        return True

    def _spawn(self, y: np.ndarray, sr: int, key: str | None, gen: int, name: str) -> None:
        """Start request ``gen``'s worker on ``y`` (filed under ``key`` when there is a cache).

        Under the lock, so that a newer request or :meth:`close` ends it and releases
        its audio whenever it comes: writing a 10-minute track into shared memory
        takes about 0.1 s, which a request made meanwhile waits for.
        """
        cache_root = str(self.cache.root) if self.cache is not None and key is not None else None
        with self._lock:
            if not self.current(gen):
                return
            try:
                worker = SeparationWorker.start(
                    self.mp_context,
                    y,
                    sr,
                    spec=self.spec,
                    key=key if cache_root is not None else None,
                    cache_root=cache_root,
                )
            except OSError as exc:  # no process or pipe to be had (too many open files)
                failed = f"separation not started: {exc.strerror or exc}"
            else:
                failed = ""
                self._worker = worker
        if failed:
            self._give_up(gen, failed)
            return
        log.info("%s: playing the original while separating (%s mode)", name, self.spec.mode)
        threading.Thread(
            target=self._watch, args=(worker, sr, gen), name="stemdeck-watch", daemon=True
        ).start()

    def _watch(self, worker: SeparationWorker, sr: int, gen: int) -> None:
        try:
            while True:
                try:
                    msg = worker.recv()
                except (EOFError, OSError):
                    self._give_up(gen, "separation stopped before it finished")
                    return
                if not self.current(gen):
                    return  # superseded by another track
                kind = msg[0]
                if kind == "progress":
                    self.progress = (msg[1], float(msg[2]))
                elif kind == "done":
                    worker.release()  # the audio is separated: its memory goes now
                    channels = self._verified(str(msg[1]))
                    if channels is None:
                        self._give_up(gen, "separated channels unusable in the cache")
                        return
                    if self._publish(channels, sr, gen):
                        log.info("%s: channels ready", self.track_name)
                    return
                elif kind == "data":
                    worker.release()
                    if self._publish(msg[1], sr, gen):
                        log.info("%s: channels ready (not cached)", self.track_name)
                    return
                elif kind == "error":
                    self._give_up(gen, str(msg[1]))
                    return
        finally:
            worker.finish()

    def _give_up(self, gen: int, reason: str) -> None:
        """No channels for request ``gen``: the original goes on playing, and says so."""
        with self._lock:
            if self.current(gen) and not self.separated:
                log.warning("%s; playing the original", reason)
                self.problem = reason
                self.progress = None

    def _publish_stems(self, stems: StemFile, source: str, gen: int) -> None:
        """A stem file's stems are its channels: no original phase, nothing separated."""
        if len(stems.names) > self.engine.max_channels:
            raise ParameterError(
                f"{Path(source).name} has {len(stems.names)} stems; this mixer has "
                f"{self.engine.max_channels} channels"
            )
        keys = tuple(channel_keys(stems.names))
        name = stem_track_name(source)
        with self._lock:
            if not self.current(gen):
                return
            self._end_worker_locked()

        def posted() -> None:
            self.track_name = name
            self.problem = None
            self.progress = None
            self.colours = list(stems.colours)
            self.separated = True

        track = Track(stems.stems, self.engine.sr, keys)
        if not self._post_track(
            gen, SetTrack(track), keys, posted, f"{name} not loaded; load it again"
        ):
            return
        log.info(
            "%s: %d stems from the file: %s",
            self.track_name,
            len(stems.names),
            ", ".join(f"{n} {c}" for n, c in zip(stems.names, stems.colours, strict=True)),
        )

    def _post_track(
        self,
        gen: int,
        command: SetTrack,
        names: Sequence[str],
        posted: Callable[[], None],
        refused: str,
    ) -> bool:
        """Post ``command`` of request ``gen`` with the registry's whole state for the
        channels ``names``, as one command; on success call ``posted`` under the lock.

        A full engine queue is retried for :data:`POST_RETRY_S` (the lock is let go
        between tries, so a newer request is never held up); then the problem is
        ``"engine queue full: " + refused``, and False. False too, silently, once a
        newer request has been made.
        """
        deadline = time.monotonic() + POST_RETRY_S
        while True:
            with self._lock:
                if not self.current(gen):
                    return False
                with self.registry.transaction() as txn:
                    txn.set_names(names)
                    ok = txn.commit(self.post, [command])
                if ok:
                    posted()
                    return True
                if time.monotonic() >= deadline:
                    self.problem = f"engine queue full: {refused}"
                    self.progress = None
                    log.warning("%s", self.problem)
                    return False
            time.sleep(POST_RETRY_INTERVAL_S)

    def _publish(self, channels: np.ndarray, channels_sr: int, gen: int) -> bool:
        """Swap the channels (at the source rate ``channels_sr``) in for the original
        of request ``gen``, if still current."""
        from .prefetch import will_need

        sr = self.engine.sr
        if channels_sr != sr:
            if not self.current(gen):
                return False
            channels = resample_channels(channels, channels_sr, sr)
        will_need(channels, 0, 10 * sr)  # the first seconds, before they play

        def posted() -> None:
            self.progress = None
            self.separated = True

        track = Track(channels, sr, self.names)
        return self._post_track(
            gen,
            SetTrack(track, same_audio=True),
            self.names,
            posted,
            "channels not published; playing the original",
        )

    # -- the worker ------------------------------------------------------------------------
    def _end_worker(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.end()

    def _end_worker_locked(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            threading.Thread(target=worker.end, daemon=True).start()

    def close(self) -> None:
        """End the worker and release its audio; nothing more is published."""
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.end()
