"""What every way to a track's channels shares: the loader's state, the decode,
and publishing to the engine.

:class:`LoaderBase` holds the playing track's state (its generation, name, progress,
problem, the worker) under one lock, and posts tracks to the engine with the
registry's whole state (:meth:`LoaderBase._post_track`). :class:`TrackLoad` is one
track's way to its channels once its original plays; :class:`Progressive` a cache
entry played as it fills. ``loader_cache.py`` (the cache) and ``loader_worker.py``
(the separation worker) build on it; ``loader.py``'s :class:`~.loader.TrackLoader`
joins them (docs/architecture.md, "Track changes").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stemdeck.core.audiofile.files import MappedDecode
from stemdeck.core.audiofile.samples import resample_channels
from stemdeck.core.control.registry import Registry
from stemdeck.core.errors import StemdeckError
from stemdeck.core.mixer.commands import SetTrack, Track
from stemdeck.core.mixer.params import plays_at
from stemdeck.core.separation.cache import FileRead, SeparationCache
from stemdeck.core.separation.keys import SeparationSpec

from .forkserver import ProcessContext, worker_context
from .separation_worker import SeparationWorker
from .track_beats import TrackBeats
from .track_limits import TrackLimits
from .track_source import LoadRequest

__all__ = ["HEAD_POLL_S", "POST_RETRY_S", "STEMS_STAGE", "LoaderBase", "Progressive", "TrackLoad"]

log = logging.getLogger(__name__)

# A track refused by a full engine queue is posted again for this long: the audio
# thread empties the queue every block, so only a stalled stream outlasts it.
POST_RETRY_S = 1.0
POST_RETRY_INTERVAL_S = 0.01
#: The stage ``/track/progress`` shows while the stems play as their chunks come in;
#: its fraction is the share of chunks ready.
STEMS_STAGE = "stems"
#: How often the play head is handed to the separation worker, in seconds.
HEAD_POLL_S = 0.1


class Progressive:
    """A track's cache entry played as it fills: its channels (a read-only memory
    map of the partial entry), its original, and one ready flag per chunk.

    The flags are written by the loader's watcher thread once a chunk's samples are
    in the entry (the worker wrote them before it reported the chunk), and read by
    the audio thread: one byte each, no lock.
    """

    def __init__(
        self, channels: np.ndarray, mix: np.ndarray, chunks: int, size: int, *, silent: bool = False
    ) -> None:
        self.channels = channels
        self.mix = mix
        self.size = size
        self.silent = silent  # ``mix`` is silence (Track.silent_mix)
        self.ready = np.zeros(chunks, np.uint8)
        self.posted = False  # the engine took it

    def track(self, sr: int, names: Sequence[str]) -> Track:
        return Track(
            self.channels,
            sr,
            tuple(names),
            mix=self.mix,
            ready=self.ready,
            chunk=self.size,
            silent_mix=self.silent,
        )

    def land(self, start: int, stop: int) -> None:
        """Samples ``[start, stop)`` are in: their chunk is ready."""
        self.ready[min(start // self.size, len(self.ready) - 1)] = 1

    @property
    def fraction(self) -> float:
        """The share of chunks ready."""
        return float(np.count_nonzero(self.ready)) / len(self.ready)


@dataclass(eq=False)
class TrackLoad:
    """One track's way to its channels once its original plays: the decode still
    under way, the file's identity, and what is known so far."""

    decode: MappedDecode
    read: FileRead | None  # what the file's identity is made of, read before the decode
    gen: int
    name: str
    identity: str | None = None  # under the spec's digest, once its channels are sought
    whole: np.ndarray | None = None  # the source decoded whole
    key: str | None = None  # its audio's cache key, once taken
    indexed: str | None = None  # the key its file's identity indexed
    published: bool = False  # the indexed entry's stems play, not yet confirmed
    confirmed: bool = False  # the indexed key is its audio's
    failed: bool = False  # the decode failed after the original started
    original: Track | None = None  # as it was posted


class LoaderBase:
    """The loader's state and its way to the engine: the base of
    :class:`~.loader.TrackLoader`, whose docstring says its parameters."""

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
        limits: TrackLimits | None = None,
        beats: TrackBeats | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.names = tuple(names)
        self.spec = spec
        self.cache = cache
        self.library = list(library)
        self.mp_context: ProcessContext = mp_context or worker_context()
        self.limits = limits or TrackLimits(mode=spec.mode, chunked=cache is not None)
        self.beats = beats
        self.generation = 0  # of the playing track
        self.track_name = ""  # the playing track
        self.progress: tuple[str, float] | None = None  # the playing track's separation
        self.problem: str | None = None  # the last failure, for the status line
        self.load_failed = False  # the last request failed (until the next one)
        self.separated = False  # the playing track's channels play (not its original)
        self.colours: list[str] = []  # #RRGGBB per channel, when the track names them
        self.labels: list[str] = []  # display name per channel, when the track names them
        #: Set once the daemon's audio runs (set from the start where nothing waits
        #: for it, and by close()): a worker is not started before, nor the stems
        #: model loaded, not to take the cores from the daemon's first moments
        #: (:meth:`~.loader_worker.SeparatedChannels._spawn`, ``TrackLoader._identity``).
        self.sounding = threading.Event()
        self.sounding.set()
        self._lock = threading.Lock()
        self._request: LoadRequest | None = None  # the requested track, being read
        self._worker: SeparationWorker | None = None
        self._closed = False

    def current(self, gen: int) -> bool:
        return gen == self.generation and not self._closed

    def _head(self, sr: int) -> int:
        """The engine's play head in samples at the rate ``sr`` (the engine counts
        the frames of the track it plays, at that track's own rate)."""
        engine = self.engine
        rate = engine.frame_rate or sr
        return int(engine.position) * sr // rate

    def _whole(self, load: TrackLoad) -> np.ndarray | None:
        """``load``'s source once decoded whole (its beat grid then found); None when
        the decode failed (generation ``gen`` gives up, saying why: the original's
        decoded part plays on) or the track no longer plays."""
        if load.whole is not None or load.failed:
            return load.whole
        gen, name = load.gen, load.name
        try:
            while True:
                if not self.current(gen):  # a newer track plays: its decode stops
                    load.decode.cancel()
                    return None
                try:
                    y = load.decode.result(timeout=HEAD_POLL_S)
                    break
                except TimeoutError:
                    continue
        except StemdeckError as exc:
            load.failed = True
            self._give_up(gen, f"{name}: {exc}")
            return None
        except OSError as exc:
            load.failed = True
            self._give_up(gen, f"{name}: not decoded whole: {exc.strerror or exc}")
            return None
        if not self.current(gen):
            return None
        if y is not load.decode.audio:  # the file ended before its header's count
            track = Track(y[np.newaxis], load.decode.sr, ("mix",), is_mix=True)
            self._post_track(
                lambda: self.current(gen),
                SetTrack(track, same_audio=True),
                self.names,
                lambda: None,
            )
        load.whole = y
        if self.beats is not None:
            self.beats.start(y, load.decode.sr, gen, name)
        return y

    def _post_track(
        self,
        wanted: Callable[[], bool],
        command: SetTrack,
        names: Sequence[str],
        posted: Callable[[], None],
    ) -> bool:
        """Post ``command`` while ``wanted()`` with the registry's whole state for the
        channels ``names``, as one command; on success call ``posted`` under the lock.
        A full engine queue is retried for :data:`POST_RETRY_S` (the lock is let go
        between tries, so a newer request is never held up); then False, as once no
        longer wanted."""
        deadline = time.monotonic() + POST_RETRY_S
        while True:
            with self._lock:
                if not wanted():
                    return False
                with self.registry.transaction() as txn:
                    txn.set_names(names)
                    ok = txn.commit(self.engine.post, [command])
                if ok:
                    posted()
                    return True
                if time.monotonic() >= deadline:
                    return False
            time.sleep(POST_RETRY_INTERVAL_S)

    def _publish(
        self,
        channels: np.ndarray,
        channels_sr: int,
        gen: int,
        worker: SeparationWorker | None = None,
    ) -> bool:
        """Swap the channels (at the source rate ``channels_sr``) in for the original
        of generation ``gen``, if it still plays (and, with ``worker``, the channels
        are still that worker's: it was not dropped meanwhile)."""
        from .prefetch import will_need

        sr = channels_sr
        if not plays_at(sr):  # a rate the read head does not take: a copy at the device's
            if not self.current(gen):
                return False
            sr = self.engine.sr
            channels = resample_channels(channels, channels_sr, sr)
        will_need(channels, 0, 10 * sr)  # the first seconds, before they play

        def posted() -> None:
            self.progress = None
            self.separated = True

        command = SetTrack(Track(channels, sr, self.names), same_audio=True)
        if self._post_track(lambda: self._wanted_by(gen, worker), command, self.names, posted):
            return True
        self._give_up(gen, "engine queue full: channels not published")
        return False

    def _give_up(self, gen: int, reason: str) -> None:
        """No channels for generation ``gen``: the original goes on playing, and says so."""
        with self._lock:
            if self.current(gen) and not self.separated:
                log.warning("%s; playing the original", reason)
                self.problem = reason
                self.progress = None

    def _wanted_by(self, gen: int, worker: SeparationWorker | None) -> bool:
        """Generation ``gen`` plays and, with ``worker``, that worker is still its own
        (under the lock, as ``_post_track`` asks)."""
        return self.current(gen) and (worker is None or self._worker is worker)

    def _post_progressive(
        self,
        progressive: Progressive,
        sr: int,
        gen: int,
        name: str,
        worker: SeparationWorker | None = None,
    ) -> None:
        """Play generation ``gen``'s partial entry in place of its original (the
        original plays on where no chunk is ready yet); with ``worker``, only if it is
        still the worker of that generation."""

        def posted() -> None:
            progressive.posted = True
            self.progress = (STEMS_STAGE, progressive.fraction)

        command = SetTrack(progressive.track(sr, self.names), same_audio=True)
        if self._post_track(lambda: self._wanted_by(gen, worker), command, self.names, posted):
            # A debug line: the status line and /track/progress say it ("stems N%
            # ready"), and a start prints only what a user needs (tests/daemon/cli).
            log.debug("%s: stems play as their chunks are separated", name)

    def _verified(self, key: str, gen: int | None = None) -> np.ndarray | None:
        """The channels of the cache entry ``key``, every block verified; None (the
        reason logged) when absent, damaged or unreadable. With ``gen``, generation
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
